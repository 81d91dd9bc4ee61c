//! Terraform's machine-readable UI (`-json`), one JSON object per line.
//!
//! Reference: Terraform "Machine-readable UI" (`internals/machine-readable-ui`), UI version 1.2
//! as printed by Terraform 1.11. Every line has `@level`, `@message`, `@module`, `@timestamp`
//! and `type`; the types Vigie understands are parsed into [`TfEvent`], anything else is kept
//! as [`TfEvent::Raw`] so nothing is lost when Terraform adds message types.

use serde::Serialize;
use serde_json::Value;

/// A typed message of Terraform's `-json` UI stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TfEvent {
    /// `version`: Terraform and UI versions.
    Version {
        /// Terraform version.
        terraform: String,
        /// UI message format version.
        ui: String,
    },
    /// `log`: a free-text message.
    Log,
    /// `planned_change`: a resource the plan will change.
    PlannedChange {
        /// Resource address.
        addr: String,
        /// `create`, `update`, `delete`, `replace`, `read`, `noop`…
        action: String,
    },
    /// `change_summary`: totals of a plan or apply.
    ChangeSummary(ChangeSummary),
    /// `apply_start`: Terraform started changing a resource.
    ApplyStart {
        /// Resource address.
        addr: String,
        /// Action.
        action: String,
    },
    /// `apply_progress`: a resource change is still running.
    ApplyProgress {
        /// Resource address.
        addr: String,
        /// Action.
        action: String,
        /// Seconds since the change started.
        elapsed_seconds: u64,
    },
    /// `apply_complete`: a resource change finished.
    ApplyComplete {
        /// Resource address.
        addr: String,
        /// Action.
        action: String,
        /// The resource id, when Terraform reports one.
        id_value: Option<String>,
        /// Seconds the change took.
        elapsed_seconds: u64,
    },
    /// `apply_errored`: a resource change failed.
    ApplyErrored {
        /// Resource address.
        addr: String,
        /// Action.
        action: String,
        /// Seconds until it failed.
        elapsed_seconds: u64,
    },
    /// `diagnostic`: a warning or error.
    Diagnostic(Diagnostic),
    /// `outputs`: the root module outputs (values only after apply).
    Outputs {
        /// Output name → `{sensitive, type, value, action}`.
        outputs: Value,
    },
    /// Anything else: an unknown `type`, a line that is not JSON (stderr), or a message from
    /// Vigie itself (`kind` = `vigie`).
    Raw {
        /// The `type` field if the line was JSON with one, `stderr`, `stdout` or `vigie` otherwise.
        kind: String,
        /// The line as received (after secret redaction).
        line: String,
    },
}

/// Totals of a `change_summary` message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeSummary {
    /// Resources added.
    pub add: u64,
    /// Resources changed.
    pub change: u64,
    /// Resources removed.
    pub remove: u64,
    /// Resources imported.
    pub import: u64,
    /// `plan`, `apply` or `destroy`.
    pub operation: String,
}

/// A `diagnostic` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// `error` or `warning`.
    pub severity: String,
    /// One-line summary.
    pub summary: String,
    /// Longer explanation (may be empty).
    pub detail: String,
    /// Resource address, when the diagnostic names one.
    pub address: Option<String>,
    /// `file:line` of the configuration, when known.
    pub location: Option<String>,
}

/// One parsed line: the `@level`, `@message` and `@timestamp` common to all lines plus the
/// typed event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UiLine {
    /// `@level` (`info`, `warn`, `error`…), `info` for non-JSON lines.
    pub level: String,
    /// `@message`, or the whole line for non-JSON lines.
    pub message: String,
    /// `@timestamp` as Terraform printed it, if any.
    pub terraform_timestamp: Option<String>,
    /// The typed event.
    pub event: TfEvent,
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_default()
}

fn hook_addr(v: &Value, key: &str) -> (String, String) {
    let obj = v.get(key).unwrap_or(&Value::Null);
    let addr = obj
        .get("resource")
        .map(|r| s(r, "addr"))
        .unwrap_or_default();
    (addr, s(obj, "action"))
}

/// Parses one line of the `-json` stream. Lines that are not JSON objects become
/// [`TfEvent::Raw`] with `kind` = `fallback_kind`.
pub fn parse_line(line: &str, fallback_kind: &str) -> UiLine {
    let v: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return UiLine {
                level: if fallback_kind == "stderr" {
                    "error".into()
                } else {
                    "info".into()
                },
                message: line.to_string(),
                terraform_timestamp: None,
                event: TfEvent::Raw {
                    kind: fallback_kind.to_string(),
                    line: line.to_string(),
                },
            };
        }
    };
    let ty = s(&v, "type");
    let event = match ty.as_str() {
        "version" => TfEvent::Version {
            terraform: s(&v, "terraform"),
            ui: s(&v, "ui"),
        },
        "log" => TfEvent::Log,
        "planned_change" => {
            let (addr, action) = hook_addr(&v, "change");
            TfEvent::PlannedChange { addr, action }
        }
        "change_summary" => {
            let c = v.get("changes").unwrap_or(&Value::Null);
            TfEvent::ChangeSummary(ChangeSummary {
                add: u(c, "add"),
                change: u(c, "change"),
                remove: u(c, "remove"),
                import: u(c, "import"),
                operation: s(c, "operation"),
            })
        }
        "apply_start" => {
            let (addr, action) = hook_addr(&v, "hook");
            TfEvent::ApplyStart { addr, action }
        }
        "apply_progress" | "apply_complete" | "apply_errored" => {
            let (addr, action) = hook_addr(&v, "hook");
            let hook = v.get("hook").unwrap_or(&Value::Null);
            let elapsed_seconds = u(hook, "elapsed_seconds");
            match ty.as_str() {
                "apply_progress" => TfEvent::ApplyProgress {
                    addr,
                    action,
                    elapsed_seconds,
                },
                "apply_complete" => TfEvent::ApplyComplete {
                    addr,
                    action,
                    id_value: hook
                        .get("id_value")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    elapsed_seconds,
                },
                _ => TfEvent::ApplyErrored {
                    addr,
                    action,
                    elapsed_seconds,
                },
            }
        }
        "diagnostic" => {
            let d = v.get("diagnostic").unwrap_or(&Value::Null);
            let location = d.get("range").map(|r| {
                let line = r.get("start").map(|st| u(st, "line")).unwrap_or_default();
                format!("{}:{}", s(r, "filename"), line)
            });
            TfEvent::Diagnostic(Diagnostic {
                severity: s(d, "severity"),
                summary: s(d, "summary"),
                detail: s(d, "detail"),
                address: d.get("address").and_then(Value::as_str).map(str::to_string),
                location,
            })
        }
        "outputs" => TfEvent::Outputs {
            outputs: v.get("outputs").cloned().unwrap_or(Value::Null),
        },
        _ => TfEvent::Raw {
            kind: if ty.is_empty() {
                fallback_kind.to_string()
            } else {
                ty.clone()
            },
            line: line.to_string(),
        },
    };
    UiLine {
        level: s(&v, "@level"),
        message: s(&v, "@message"),
        terraform_timestamp: v
            .get("@timestamp")
            .and_then(Value::as_str)
            .map(str::to_string),
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_types_and_keeps_unknown_ones() {
        let l = parse_line(
            r#"{"@level":"info","@message":"terraform_data.a: Creation complete after 0s [id=x]","@module":"terraform.ui","@timestamp":"2026-11-24T14:21:29.445138Z","hook":{"resource":{"addr":"terraform_data.a"},"action":"create","id_key":"id","id_value":"x","elapsed_seconds":0},"type":"apply_complete"}"#,
            "stdout",
        );
        assert_eq!(
            l.event,
            TfEvent::ApplyComplete {
                addr: "terraform_data.a".into(),
                action: "create".into(),
                id_value: Some("x".into()),
                elapsed_seconds: 0
            }
        );
        let l = parse_line(
            r#"{"@level":"info","@message":"m","type":"change_summary","changes":{"add":1,"change":2,"import":0,"remove":3,"operation":"plan"}}"#,
            "stdout",
        );
        assert_eq!(
            l.event,
            TfEvent::ChangeSummary(ChangeSummary {
                add: 1,
                change: 2,
                remove: 3,
                import: 0,
                operation: "plan".into()
            })
        );
        let l = parse_line(
            r#"{"@level":"info","@message":"x","type":"init_output"}"#,
            "stdout",
        );
        assert!(matches!(l.event, TfEvent::Raw { ref kind, .. } if kind == "init_output"));
        let l = parse_line("not json", "stderr");
        assert!(matches!(l.event, TfEvent::Raw { ref kind, .. } if kind == "stderr"));
        assert_eq!(l.level, "error");
        let l = parse_line(
            r#"{"@level":"error","@message":"Error: x","type":"diagnostic","diagnostic":{"severity":"error","summary":"x","detail":"d","range":{"filename":"main.tf.json","start":{"line":3}}}}"#,
            "stdout",
        );
        match l.event {
            TfEvent::Diagnostic(d) => {
                assert_eq!(d.summary, "x");
                assert_eq!(d.location.as_deref(), Some("main.tf.json:3"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

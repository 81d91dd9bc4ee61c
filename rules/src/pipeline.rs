//! Field mapping and logsource routing: a processing pipeline in YAML, modelled
//! on pySigma's processing pipelines (`name`, `priority`, `transformations`
//! with `id`, `type`, `rule_conditions`, `field_name_conditions`).
//!
//! Transformation types understood here:
//!
//! | type | from | meaning |
//! | --- | --- | --- |
//! | `field_name_mapping` | pySigma | `mapping: {SigmaName: ecs.path}` for rules whose logsource matches `rule_conditions` (unset keys match anything, as in pySigma) |
//! | `map_string` | pySigma | `mapping: {value: replacement}` for the fields named in `field_name_conditions` (`include_fields`) |
//! | `vigie_route` | Vigie | which event kinds (and, for services, which `log.logger` / `log.syslog.appname`) a logsource is; a route applies only to a rule whose logsource has exactly the route's keys |
//! | `vigie_keyword_field` | Vigie | the field keyword searches (bare value lists) look in |
//!
//! Every transformation may carry `vigie_notes: {SigmaName: text}` for the
//! generated `FIELDS.md`. A Sigma field with no mapping is used as-is when it
//! already is a Vigie ECS path (`process.executable`, `labels.x`); otherwise
//! the rule is rejected, naming the field.

use std::collections::BTreeMap;

use vigie_proto::event::Kind;
use yaml_rust2::{Yaml, YamlLoader};

use crate::ast::{LogSource, get, scalar_text, type_name};
use crate::error::Reason;
use crate::field::FieldRef;

/// The pipeline shipped with Vigie (do not edit FIELDS.md by hand: a test renders it).
pub const VIGIE_LINUX_YAML: &str = include_str!("../mappings/vigie-linux.yml");

/// Logsource keys a transformation applies to (unset = any).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogsourceCond {
    pub product: Option<String>,
    pub category: Option<String>,
    pub service: Option<String>,
}

impl LogsourceCond {
    fn contains(&self, ls: &LogSource) -> bool {
        let ok = |c: &Option<String>, r: &Option<String>| c.is_none() || c == r;
        ok(&self.product, &ls.product)
            && ok(&self.category, &ls.category)
            && ok(&self.service, &ls.service)
    }
    fn exactly(&self, ls: &LogSource) -> bool {
        self.product == ls.product && self.category == ls.category && self.service == ls.service
    }
    fn describe(&self) -> String {
        LogSource {
            product: self.product.clone(),
            category: self.category.clone(),
            service: self.service.clone(),
        }
        .to_string()
    }
}

/// Where a logsource's events come from in Vigie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub id: String,
    pub kinds: Vec<Kind>,
    /// Lowercased names matched against `log.logger` or `log.syslog.appname`;
    /// empty = any logger.
    pub loggers: Vec<String>,
    pub logsource: LogsourceCond,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldMapping {
    id: String,
    conds: Vec<LogsourceCond>,
    mapping: Vec<(String, String)>,
    notes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ValueMap {
    id: String,
    fields: Vec<String>,
    mapping: Vec<(String, String)>,
}

/// A parsed pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    pub name: String,
    routes: Vec<Route>,
    fields: Vec<FieldMapping>,
    values: Vec<ValueMap>,
    keyword_field: FieldRef,
}

/// A Sigma field resolved for one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedField {
    pub field: FieldRef,
    /// `map_string` replacements for this field's values (lowercased keys).
    pub values: Vec<(String, String)>,
}

fn err(id: &str, msg: impl std::fmt::Display) -> String {
    format!("pipeline transformation `{id}`: {msg}")
}

fn str_map(id: &str, key: &str, y: Option<&Yaml>) -> Result<Vec<(String, String)>, String> {
    match y {
        None => Ok(Vec::new()),
        Some(Yaml::Hash(h)) => h
            .iter()
            .map(|(k, v)| match (scalar_text(k), scalar_text(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(err(id, format!("`{key}` must map strings to strings"))),
            })
            .collect(),
        Some(other) => Err(err(
            id,
            format!("`{key}` must be a mapping, found {}", type_name(other)),
        )),
    }
}

fn str_list(id: &str, key: &str, y: Option<&Yaml>) -> Result<Vec<String>, String> {
    match y {
        None => Ok(Vec::new()),
        Some(Yaml::Array(a)) => a
            .iter()
            .map(|v| scalar_text(v).ok_or_else(|| err(id, format!("`{key}` must list strings"))))
            .collect(),
        Some(other) => Err(err(
            id,
            format!("`{key}` must be a list, found {}", type_name(other)),
        )),
    }
}

fn logsource_conds(id: &str, y: Option<&Yaml>) -> Result<Vec<LogsourceCond>, String> {
    let Some(y) = y else { return Ok(Vec::new()) };
    let Yaml::Array(a) = y else {
        return Err(err(id, "`rule_conditions` must be a list"));
    };
    a.iter()
        .map(|c| {
            let Yaml::Hash(h) = c else {
                return Err(err(id, "each rule condition must be a mapping"));
            };
            match get(h, "type").and_then(Yaml::as_str) {
                Some("logsource") => {}
                other => {
                    return Err(err(
                        id,
                        format!(
                            "rule condition type {other:?} is not supported; expected `logsource`"
                        ),
                    ));
                }
            }
            let f = |k: &str| get(h, k).and_then(scalar_text).map(|s| s.to_lowercase());
            Ok(LogsourceCond {
                product: f("product"),
                category: f("category"),
                service: f("service"),
            })
        })
        .collect()
}

impl Pipeline {
    /// The pipeline shipped with Vigie ([`VIGIE_LINUX_YAML`]).
    pub fn vigie_linux() -> Pipeline {
        // The embedded pipeline is checked by a unit test; an error here would
        // be a build defect, so fall back to an empty pipeline rather than panic.
        Pipeline::parse(VIGIE_LINUX_YAML).unwrap_or_else(|_| Pipeline {
            name: "invalid-embedded-pipeline".into(),
            routes: Vec::new(),
            fields: Vec::new(),
            values: Vec::new(),
            keyword_field: FieldRef::Known(crate::field::Known::Message),
        })
    }

    /// Parses a pipeline document.
    pub fn parse(text: &str) -> Result<Pipeline, String> {
        let docs =
            YamlLoader::load_from_str(text).map_err(|e| format!("invalid pipeline yaml: {e}"))?;
        let Some(Yaml::Hash(h)) = docs.first() else {
            return Err("a pipeline must be a yaml mapping".into());
        };
        let name = get(h, "name").and_then(scalar_text).unwrap_or_default();
        let Some(Yaml::Array(ts)) = get(h, "transformations") else {
            return Err("a pipeline needs a `transformations` list".into());
        };
        let mut p = Pipeline {
            name,
            routes: Vec::new(),
            fields: Vec::new(),
            values: Vec::new(),
            keyword_field: FieldRef::Known(crate::field::Known::Message),
        };
        for t in ts {
            let Yaml::Hash(t) = t else {
                return Err("each transformation must be a mapping".into());
            };
            let id = get(t, "id")
                .and_then(scalar_text)
                .unwrap_or_else(|| "?".into());
            let ty = get(t, "type").and_then(scalar_text).unwrap_or_default();
            let conds = logsource_conds(&id, get(t, "rule_conditions"))?;
            let notes: BTreeMap<String, String> =
                str_map(&id, "vigie_notes", get(t, "vigie_notes"))?
                    .into_iter()
                    .collect();
            match ty.as_str() {
                "vigie_route" => {
                    let [cond] = conds.as_slice() else {
                        return Err(err(
                            &id,
                            "a route needs exactly one logsource rule condition",
                        ));
                    };
                    let kinds = str_list(&id, "kinds", get(t, "kinds"))?
                        .iter()
                        .map(|k| {
                            Kind::parse(k).ok_or_else(|| err(&id, format!("unknown kind {k:?}")))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if kinds.is_empty() {
                        return Err(err(&id, "a route needs at least one kind"));
                    }
                    let loggers = str_list(&id, "loggers", get(t, "loggers"))?
                        .iter()
                        .map(|l| l.to_lowercase())
                        .collect();
                    p.routes.push(Route {
                        id,
                        kinds,
                        loggers,
                        logsource: cond.clone(),
                    });
                }
                "field_name_mapping" => {
                    let mapping = str_map(&id, "mapping", get(t, "mapping"))?;
                    for (sigma, ecs) in &mapping {
                        if FieldRef::parse(ecs).is_none() {
                            return Err(err(
                                &id,
                                format!("{sigma} maps to {ecs:?}, which is not a vigie field"),
                            ));
                        }
                    }
                    p.fields.push(FieldMapping {
                        id,
                        conds,
                        mapping,
                        notes,
                    });
                }
                "map_string" => {
                    let fields = match get(t, "field_name_conditions") {
                        Some(Yaml::Array(a)) => {
                            let mut out = Vec::new();
                            for c in a {
                                let Yaml::Hash(c) = c else {
                                    return Err(err(&id, "field name conditions must be mappings"));
                                };
                                out.extend(str_list(&id, "fields", get(c, "fields"))?);
                            }
                            out
                        }
                        _ => return Err(err(&id, "map_string needs `field_name_conditions`")),
                    };
                    let mapping = str_map(&id, "mapping", get(t, "mapping"))?
                        .into_iter()
                        .map(|(k, v)| (k.to_lowercase(), v))
                        .collect();
                    p.values.push(ValueMap {
                        id,
                        fields,
                        mapping,
                    });
                }
                "vigie_keyword_field" => {
                    let f = get(t, "field").and_then(scalar_text).unwrap_or_default();
                    p.keyword_field = FieldRef::parse(&f)
                        .ok_or_else(|| err(&id, format!("{f:?} is not a vigie field")))?;
                }
                other => {
                    return Err(err(
                        &id,
                        format!("transformation type {other:?} is not supported"),
                    ));
                }
            }
        }
        Ok(p)
    }

    /// The route of a rule's logsource.
    pub fn route(&self, ls: &LogSource) -> Result<&Route, Reason> {
        self.routes
            .iter()
            .find(|r| r.logsource.exactly(ls))
            .ok_or_else(|| Reason::UnsupportedLogsource(ls.to_string()))
    }

    /// All routes, in pipeline order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Where keyword searches look.
    pub fn keyword_field(&self) -> &FieldRef {
        &self.keyword_field
    }

    /// Resolves a Sigma field name for a rule with logsource `ls`.
    pub fn map_field(&self, ls: &LogSource, name: &str) -> Result<MappedField, Reason> {
        let field = self
            .fields
            .iter()
            .filter(|m| m.conds.is_empty() || m.conds.iter().any(|c| c.contains(ls)))
            .find_map(|m| m.mapping.iter().find(|(s, _)| s == name).map(|(_, e)| e))
            .and_then(|e| FieldRef::parse(e))
            .or_else(|| FieldRef::parse(name))
            .ok_or_else(|| Reason::UnmappedField {
                field: name.to_string(),
                logsource: ls.to_string(),
            })?;
        let values = self
            .values
            .iter()
            .filter(|v| v.fields.iter().any(|f| f == name))
            .flat_map(|v| v.mapping.iter().cloned())
            .collect();
        Ok(MappedField { field, values })
    }

    /// The mapping as Markdown (the committed `FIELDS.md`).
    pub fn render_markdown(&self) -> String {
        let mut o = String::new();
        o.push_str("# Sigma fields in Vigie\n\n");
        o.push_str(
            "Generated from `rules/mappings/vigie-linux.yml` by the test \
             `pipeline::tests::fields_md_is_current` (`VIGIE_BLESS=1 cargo test -p vigie-rules` \
             rewrites it). Do not edit by hand.\n\n",
        );
        o.push_str("## Logsources\n\n");
        o.push_str(
            "A rule is routed only when its logsource has exactly the keys of one route below; \
             any other logsource is rejected with \"logsource … is not produced by vigie\". \
             Loggers are compared, case-insensitively, with `log.logger` or `log.syslog.appname`.\n\n",
        );
        o.push_str(
            "| logsource | Vigie kinds (`event.dataset`) | loggers |\n| --- | --- | --- |\n",
        );
        for r in &self.routes {
            let kinds: Vec<String> = r.kinds.iter().map(|k| format!("`{k}`")).collect();
            let loggers = if r.loggers.is_empty() {
                "any".to_string()
            } else {
                r.loggers
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            o.push_str(&format!(
                "| `{}` | {} | {} |\n",
                r.logsource.describe(),
                kinds.join(", "),
                loggers
            ));
        }
        o.push_str("\n## Field names\n\n");
        o.push_str(&format!(
            "Keyword searches (bare lists of values) look in `{}`. A field not listed here is \
             used as-is when it is a Vigie field path (`process.executable`, `labels.key`, see \
             `vigie_proto::event::FIELD_PATHS`); otherwise the rule is rejected and the error \
             names the field.\n",
            self.keyword_field
        ));
        for m in &self.fields {
            let scope = if m.conds.is_empty() {
                "every logsource".to_string()
            } else {
                m.conds
                    .iter()
                    .map(|c| format!("`{}`", c.describe()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            o.push_str(&format!("\n### `{}` ({scope})\n\n", m.id));
            o.push_str("| Sigma field | Vigie field | note |\n| --- | --- | --- |\n");
            for (s, e) in &m.mapping {
                let mut note = m.notes.get(s).cloned().unwrap_or_default();
                for v in self.values.iter().filter(|v| v.fields.contains(s)) {
                    let pairs: Vec<String> = v
                        .mapping
                        .iter()
                        .map(|(a, b)| format!("`{a}` → `{b}`"))
                        .collect();
                    if !note.is_empty() {
                        note.push(' ');
                    }
                    note.push_str(&format!("values: {}", pairs.join(", ")));
                }
                o.push_str(&format!("| `{s}` | `{e}` | {note} |\n"));
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(p: Option<&str>, c: Option<&str>, s: Option<&str>) -> LogSource {
        LogSource {
            product: p.map(str::to_string),
            category: c.map(str::to_string),
            service: s.map(str::to_string),
        }
    }

    #[test]
    fn embedded_pipeline_parses() {
        let p = Pipeline::parse(VIGIE_LINUX_YAML).expect("embedded pipeline");
        assert_eq!(p, Pipeline::vigie_linux());
        assert!(!p.routes.is_empty());
    }

    #[test]
    fn field_mapping_table() {
        let p = Pipeline::vigie_linux();
        let proc_ = ls(Some("linux"), Some("process_creation"), None);
        let net = ls(Some("linux"), Some("network_connection"), None);
        let file = ls(Some("linux"), Some("file_event"), None);
        let audit = ls(Some("linux"), None, Some("auditd"));
        let cases: &[(&LogSource, &str, &str)] = &[
            (&proc_, "Image", "process.executable"),
            (&proc_, "CommandLine", "process.command_line"),
            (&proc_, "ParentImage", "process.parent.executable"),
            (&proc_, "ParentCommandLine", "process.parent.command_line"),
            (&proc_, "User", "user.name"),
            (&proc_, "CurrentDirectory", "process.working_directory"),
            (&proc_, "ProcessId", "process.pid"),
            (&proc_, "ComputerName", "host.name"),
            (&proc_, "process.args", "process.args"), // ECS paths pass through
            (&proc_, "labels.team", "labels.team"),
            (&file, "TargetFilename", "file.path"),
            (&net, "DestinationIp", "destination.ip"),
            (&net, "DestinationPort", "destination.port"),
            (&net, "DestinationHostname", "destination.address"),
            (&net, "SourceIp", "source.ip"),
            (&net, "SourcePort", "source.port"),
            (&net, "Initiated", "event.dataset"),
            (&net, "Image", "process.executable"),
            (&audit, "type", "labels.auditd.type"),
            (&audit, "a0", "labels.auditd.a0"),
            (&audit, "a9", "labels.auditd.a9"),
            (&audit, "SYSCALL", "labels.auditd.SYSCALL"),
            (&audit, "exe", "labels.auditd.exe"),
        ];
        for (l, sigma, ecs) in cases {
            let m = p
                .map_field(l, sigma)
                .unwrap_or_else(|e| panic!("{sigma}: {e}"));
            assert_eq!(m.field.path(), *ecs, "{sigma} in {l}");
        }
        let init = p.map_field(&net, "Initiated").expect("initiated");
        assert!(
            init.values
                .contains(&("true".into(), "network_connect".into()))
        );
        assert_eq!(
            p.map_field(&proc_, "LogonId").map_err(|e| e.to_string()),
            Err("field `LogonId` has no vigie equivalent for logsource {product: linux, category: process_creation}; map it in the pipeline or use an ecs field path".into())
        );
        // auditd names are not process_creation names.
        assert!(p.map_field(&proc_, "a0").is_err());
    }

    #[test]
    fn routing_table() {
        let p = Pipeline::vigie_linux();
        type Case<'a> = (LogSource, Result<&'a [Kind], &'a str>, &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (
                ls(Some("linux"), Some("process_creation"), None),
                Ok(&[Kind::ProcessExec]),
                &[],
            ),
            (
                ls(Some("linux"), Some("network_connection"), None),
                Ok(&[Kind::NetworkConnect, Kind::NetworkAccept]),
                &[],
            ),
            (
                ls(Some("linux"), Some("file_event"), None),
                Ok(&[Kind::FileChange]),
                &[],
            ),
            (
                ls(Some("linux"), None, Some("sshd")),
                Ok(&[Kind::Log, Kind::Authentication]),
                &["sshd"],
            ),
            (
                ls(Some("linux"), None, Some("cron")),
                Ok(&[Kind::Log]),
                &["cron", "crond", "crontab"],
            ),
            (
                ls(Some("linux"), None, Some("auditd")),
                Ok(&[Kind::Log]),
                &["auditd", "audit"],
            ),
            (
                ls(Some("linux"), None, None),
                Ok(&[Kind::Log, Kind::Authentication]),
                &[],
            ),
            (
                ls(Some("linux"), Some("dns"), None),
                Err("logsource {product: linux, category: dns} is not produced by vigie"),
                &[],
            ),
            (
                ls(Some("windows"), Some("process_creation"), None),
                Err(
                    "logsource {product: windows, category: process_creation} is not produced by vigie",
                ),
                &[],
            ),
            (
                ls(None, Some("process_creation"), None),
                Err("logsource {category: process_creation} is not produced by vigie"),
                &[],
            ),
        ];
        for (l, want, loggers) in cases {
            match (p.route(l), want) {
                (Ok(r), Ok(kinds)) => {
                    assert_eq!(r.kinds.as_slice(), *kinds, "{l}");
                    assert_eq!(
                        r.loggers,
                        loggers.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                        "{l}"
                    );
                }
                (Err(e), Err(msg)) => assert_eq!(e.to_string(), *msg),
                (got, want) => panic!("{l}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn bad_pipelines_are_rejected() {
        let bad = [
            (
                "transformations: [{id: x, type: nope}]",
                "pipeline transformation `x`: transformation type \"nope\" is not supported",
            ),
            (
                "transformations: [{id: x, type: field_name_mapping, mapping: {A: not.a.field}}]",
                "pipeline transformation `x`: A maps to \"not.a.field\", which is not a vigie field",
            ),
            (
                "transformations: [{id: r, type: vigie_route, kinds: [bogus], rule_conditions: [{type: logsource, product: linux}]}]",
                "pipeline transformation `r`: unknown kind \"bogus\"",
            ),
            ("name: x", "a pipeline needs a `transformations` list"),
        ];
        for (y, want) in bad {
            assert_eq!(Pipeline::parse(y), Err(want.to_string()));
        }
    }

    #[test]
    fn fields_md_is_current() {
        let rendered = Pipeline::vigie_linux().render_markdown();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/FIELDS.md");
        if std::env::var_os("VIGIE_BLESS").is_some() {
            std::fs::write(path, &rendered).expect("write FIELDS.md");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == rendered,
            "rules/FIELDS.md is stale: run `VIGIE_BLESS=1 cargo test -p vigie-rules fields_md` and commit it"
        );
    }
}

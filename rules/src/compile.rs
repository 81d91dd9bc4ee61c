//! Validate and resolve: parsed rules → field-indexed matchers, through the
//! pipeline's field mapping and logsource routing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use vigie_proto::event::{Event, Kind};

use crate::ast::{self, DetectionRule, Document, RuleMeta};
use crate::condition::{self, Expr};
use crate::correlation::{self, CompiledCorrelation, CorrelationLimits};
use crate::error::{Reason, RuleError};
use crate::field::{FieldRef, Known};
use crate::matcher::{self, Item, ItemEnv, Scratch};
use crate::pipeline::{Pipeline, Route};

/// A search identifier: OR of branches, each an AND of items.
#[derive(Clone, Debug)]
pub struct Selection {
    pub name: String,
    pub branches: Vec<Vec<Item>>,
}

impl Selection {
    pub(crate) fn eval(&self, ev: &Event, fields: &[FieldRef], sc: &mut Scratch) -> bool {
        self.branches
            .iter()
            .any(|b| b.iter().all(|i| i.eval(ev, fields, sc)))
    }
}

/// A detection rule ready to evaluate.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub meta: Arc<RuleMeta>,
    pub route: Route,
    /// Bit `k.code()` set for each kind in `route.kinds`.
    pub(crate) kind_mask: u16,
    pub selections: Vec<Selection>,
    /// Any of these conditions matching makes the rule match.
    pub conditions: Vec<Expr>,
    /// False when the rule only feeds a correlation (`generate: false`).
    pub standalone: bool,
}

impl CompiledRule {
    pub(crate) fn applies_to(
        &self,
        ev: &Event,
        sc: &mut Scratch,
        fields: &[FieldRef],
        logger_slots: (usize, usize),
    ) -> bool {
        if self.kind_mask & (1 << ev.event.kind.code()) == 0 {
            return false;
        }
        if self.route.loggers.is_empty() {
            return true;
        }
        for slot in [logger_slots.0, logger_slots.1] {
            sc.fill(slot, &fields[slot], ev);
            if sc
                .texts(slot)
                .1
                .iter()
                .any(|l| self.route.loggers.iter().any(|r| r == l))
            {
                return true;
            }
        }
        false
    }

    pub(crate) fn eval(&self, ev: &Event, fields: &[FieldRef], sc: &mut Scratch) -> bool {
        let sels = &self.selections;
        self.conditions
            .iter()
            .any(|c| c.eval(&mut |i| sels[i].eval(ev, fields, sc)))
    }
}

/// Interns field references into engine slots.
#[derive(Clone, Debug, Default)]
pub struct FieldTable {
    pub fields: Vec<FieldRef>,
    index: HashMap<FieldRef, usize>,
}

impl FieldTable {
    pub fn slot(&mut self, f: FieldRef) -> usize {
        if let Some(i) = self.index.get(&f) {
            return *i;
        }
        self.fields.push(f.clone());
        self.index.insert(f, self.fields.len() - 1);
        self.fields.len() - 1
    }
}

/// How rules are loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub pipeline: Pipeline,
    /// Values of `%name%` placeholders for the `expand` modifier.
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// Bounds for correlation state; checked against correlation conditions at load time.
    pub limits: CorrelationLimits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            pipeline: Pipeline::vigie_linux(),
            placeholders: BTreeMap::new(),
            limits: CorrelationLimits::default(),
        }
    }
}

/// Every rule that loaded, compiled against one field table.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<CompiledRule>,
    pub correlations: Vec<CompiledCorrelation>,
    pub(crate) fields: FieldTable,
    pub(crate) limits: CorrelationLimits,
}

impl RuleSet {
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    /// The field each engine slot reads.
    pub fn fields(&self) -> &[FieldRef] {
        &self.fields.fields
    }
}

/// Loads every rule of `files` (`(path, text)` pairs; the caller reads them).
/// Rules that cannot load are returned as errors; the others load regardless.
pub fn load_sources(files: &[(String, String)]) -> (RuleSet, Vec<RuleError>) {
    load_sources_with(files, &LoadOptions::default())
}

/// [`load_sources`] with a pipeline, placeholders and limits of your choice.
pub fn load_sources_with(
    files: &[(String, String)],
    opts: &LoadOptions,
) -> (RuleSet, Vec<RuleError>) {
    let mut set = RuleSet {
        limits: opts.limits,
        ..RuleSet::default()
    };
    // The logger fields are always slots 0 and 1 (routing reads them).
    set.fields.slot(FieldRef::Known(Known::LogLogger));
    set.fields.slot(FieldRef::Known(Known::SyslogAppname));
    let mut errors = Vec::new();
    let mut correlations = Vec::new();
    let mut ids = HashSet::new();
    for (path, text) in files {
        for doc in ast::parse_file(path, text) {
            let doc = match doc {
                Ok(d) => d,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let meta = match &doc {
                Document::Rule(r) => &r.meta,
                Document::Correlation(c) => &c.meta,
            };
            if let Some(id) = &meta.id
                && !ids.insert(id.clone())
            {
                errors.push(RuleError {
                    rule: meta.source.clone(),
                    reason: Reason::DuplicateId(id.clone()),
                });
                continue;
            }
            match doc {
                Document::Rule(r) => match compile_rule(&r, opts, &mut set.fields) {
                    Ok(c) => set.rules.push(c),
                    Err(reason) => errors.push(RuleError {
                        rule: r.meta.source.clone(),
                        reason,
                    }),
                },
                Document::Correlation(c) => correlations.push(c),
            }
        }
    }
    for c in correlations {
        match correlation::compile(&c, &mut set, opts) {
            Ok(cc) => set.correlations.push(cc),
            Err(reason) => errors.push(RuleError {
                rule: c.meta.source.clone(),
                reason,
            }),
        }
    }
    // A rule referenced only by correlations with `generate: false` raises no alert alone.
    let mut generate: HashMap<usize, bool> = HashMap::new();
    for c in &set.correlations {
        for r in &c.rules {
            *generate.entry(*r).or_insert(false) |= c.generate;
        }
    }
    for (r, g) in generate {
        set.rules[r].standalone = g;
    }
    (set, errors)
}

/// Compiles one detection rule.
pub fn compile_rule(
    r: &DetectionRule,
    opts: &LoadOptions,
    table: &mut FieldTable,
) -> Result<CompiledRule, Reason> {
    let pipeline = &opts.pipeline;
    let ls = &r.meta.logsource;
    let route = pipeline.route(ls)?.clone();
    let mut selections = Vec::new();
    for s in &r.searches {
        let mut branches = Vec::new();
        for b in &s.branches {
            let mut items = Vec::new();
            for it in b {
                let (name, mapped) = match &it.field {
                    Some(f) => (f.clone(), pipeline.map_field(ls, f)?),
                    None => (
                        s.name.clone(),
                        crate::pipeline::MappedField {
                            field: pipeline.keyword_field().clone(),
                            values: Vec::new(),
                        },
                    ),
                };
                let slot = table.slot(mapped.field.clone());
                let values: Vec<yaml_rust2::Yaml> = if mapped.values.is_empty() {
                    it.values.clone()
                } else {
                    it.values
                        .iter()
                        .map(|v| match ast::scalar_text(v) {
                            Some(t) => {
                                match mapped.values.iter().find(|(k, _)| *k == t.to_lowercase()) {
                                    Some((_, rep)) => yaml_rust2::Yaml::String(rep.clone()),
                                    None => v.clone(),
                                }
                            }
                            None => v.clone(),
                        })
                        .collect()
                };
                // fieldref targets: collected first, interned once the item compiled.
                let mut refs: Vec<FieldRef> = Vec::new();
                let mut env_resolve = |n: &str| -> Result<usize, Reason> {
                    refs.push(pipeline.map_field(ls, n)?.field);
                    Ok(refs.len() - 1)
                };
                let mut env = ItemEnv {
                    placeholders: &opts.placeholders,
                    resolve_field: &mut env_resolve,
                };
                let mut item = matcher::compile_item(
                    &name,
                    slot,
                    it.field.is_none(),
                    &it.modifiers,
                    &values,
                    &mut env,
                )?;
                if let matcher::ItemMatcher::FieldRef { others, .. } = &mut item.matcher {
                    for o in others.iter_mut() {
                        *o = table.slot(refs[*o].clone());
                    }
                }
                items.push(item);
            }
            branches.push(items);
        }
        selections.push(Selection {
            name: s.name.clone(),
            branches,
        });
    }
    let names: Vec<String> = r.searches.iter().map(|s| s.name.clone()).collect();
    let mut conditions = Vec::new();
    for c in &r.conditions {
        let parsed = condition::parse(c).and_then(|p| condition::resolve(&p, &names));
        conditions.push(parsed.map_err(|detail| Reason::Condition {
            condition: c.clone(),
            detail,
        })?);
    }
    let kind_mask = route.kinds.iter().fold(0u16, |m, k| m | (1 << k.code()));
    Ok(CompiledRule {
        meta: Arc::new(r.meta.clone()),
        route,
        kind_mask,
        selections,
        conditions,
        standalone: true,
    })
}

/// The kinds a rule applies to.
pub fn kinds_of(rule: &CompiledRule) -> Vec<Kind> {
    rule.route.kinds.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use vigie_proto::event::Timestamp;

    fn files(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const GOOD: &str = "title: good\nid: g1\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel: {Image|endswith: /nc}\n  condition: sel\n";

    #[test]
    fn broken_rules_are_errors_and_never_stop_the_others() {
        let (set, errors) = load_sources(&files(&[
            ("bad.yml", "title: [unclosed"),
            (
                "win.yml",
                "title: w\nlogsource: {product: windows, category: process_creation}\ndetection: {sel: {Image: x}, condition: sel}\n",
            ),
            (
                "cond.yml",
                "title: c\nlogsource: {product: linux, category: process_creation}\ndetection: {sel: {Image: x}, condition: sel and nope}\n",
            ),
            ("good.yml", GOOD),
            ("dup.yml", GOOD),
        ]));
        assert_eq!(set.len(), 1);
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[0].starts_with("rule bad.yml: invalid yaml:"),
            "{}",
            got[0]
        );
        assert_eq!(
            got[1],
            "rule win.yml: logsource {product: windows, category: process_creation} is not produced by vigie"
        );
        assert_eq!(
            got[2],
            "rule cond.yml: condition `sel and nope`: identifier `nope` is not defined in detection"
        );
        assert_eq!(
            got[3],
            "rule dup.yml (g1): duplicate rule id g1; ids must be unique across the rule set"
        );
    }

    #[test]
    fn loggers_route_service_rules() {
        let rule = "title: s\nlogsource: {product: linux, service: sshd}\ndetection:\n  kw: ['error in libcrypto']\n  condition: kw\n";
        let (set, errors) = load_sources(&files(&[("s.yml", rule)]));
        assert!(errors.is_empty(), "{errors:?}");
        let engine = Engine::new(set);
        let mut ev = Event::new(Kind::Log, Timestamp(0));
        ev.message = "fatal: error in libcrypto".into();
        assert!(engine.evaluate(&ev).is_empty(), "no logger: not sshd");
        ev.log.get_or_insert_with(Default::default).logger = "cron".into();
        assert!(engine.evaluate(&ev).is_empty(), "cron is not sshd");
        ev.log.get_or_insert_with(Default::default).logger = "SSHD".into();
        assert_eq!(engine.evaluate(&ev).len(), 1);
        ev.log = None;
        ev.log.get_or_insert_with(Default::default).syslog = Some(vigie_proto::event::Syslog {
            appname: "sshd".into(),
            ..Default::default()
        });
        assert_eq!(
            engine.evaluate(&ev).len(),
            1,
            "log.syslog.appname routes too"
        );
        ev.event.kind = Kind::ProcessExec;
        assert!(engine.evaluate(&ev).is_empty(), "wrong kind");
    }

    #[test]
    fn placeholders_fieldref_and_lists_of_maps() {
        let rule = "title: p\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    - User|expand: '%admins%'\n    - CommandLine|fieldref: Image\n  condition: sel\n";
        let (_, errors) = load_sources(&files(&[("p.yml", rule)]));
        assert_eq!(
            errors[0].reason.to_string(),
            "field `User`: placeholder %admins% has no value; provide it in the placeholder map"
        );
        let opts = LoadOptions {
            placeholders: [("admins".to_string(), vec!["root".to_string()])]
                .into_iter()
                .collect(),
            ..LoadOptions::default()
        };
        let (set, errors) = load_sources_with(&files(&[("p.yml", rule)]), &opts);
        assert!(errors.is_empty(), "{errors:?}");
        let engine = Engine::new(set);
        let mut ev = Event::new(Kind::ProcessExec, Timestamp(0));
        ev.user.get_or_insert_with(Default::default).name = "ROOT".into();
        assert_eq!(engine.evaluate(&ev).len(), 1);
        let mut ev = Event::new(Kind::ProcessExec, Timestamp(0));
        let p = ev.process.get_or_insert_with(Default::default);
        p.executable = "/bin/x".into();
        p.command_line = "/bin/x".into();
        assert_eq!(engine.evaluate(&ev).len(), 1, "fieldref branch");
        ev.process.get_or_insert_with(Default::default).command_line = "/bin/y".into();
        assert!(engine.evaluate(&ev).is_empty());
    }

    #[test]
    fn condition_lists_match_if_any_matches() {
        let rule = "title: l\nlogsource: {product: linux, category: process_creation}\ndetection:\n  a: {Image: /a}\n  b: {Image: /b}\n  condition: [a, b]\n";
        let (set, errors) = load_sources(&files(&[("l.yml", rule)]));
        assert!(errors.is_empty());
        let engine = Engine::new(set);
        for (img, n) in [("/a", 1), ("/b", 1), ("/c", 0)] {
            let mut ev = Event::new(Kind::ProcessExec, Timestamp(0));
            ev.process.get_or_insert_with(Default::default).executable = img.into();
            assert_eq!(engine.evaluate(&ev).len(), n, "{img}");
        }
    }
}
